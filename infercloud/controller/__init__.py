"""The controller: observe, decide, act; keeps each model's replicas at their target, by region and pool."""
