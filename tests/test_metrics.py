"""How returns are printed for people."""

from prl.run.logs import format_return


def test_small_returns_keep_three_decimals_and_large_ones_one():
    assert format_return(0.955) == "0.955"  # MiniGrid: one decimal would read 1.0
    assert format_return(500.0) == "500.0" and format_return(-71.94) == "-71.9"
    assert format_return(0.0, like=-150.0) == "0.0" and format_return(0.01234, like=0.9) == "0.012"
    assert format_return(None) == "-"
