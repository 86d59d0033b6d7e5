"""The simulated site: plant models and the scenario runner (the embedded default for desk and tests)."""
