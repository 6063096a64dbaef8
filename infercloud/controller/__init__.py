"""The controller: keeps each model's replicas running and healthy (and, later, scales them on SLOs)."""
