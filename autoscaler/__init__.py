"""warmscale autoscaler."""
