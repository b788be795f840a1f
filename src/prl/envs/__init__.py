"""Environments: building them, their spaces, the observation layout, known env families and their tuned presets."""
