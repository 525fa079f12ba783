"""Single-machine mode: vLLM engines as local processes behind the router, scaled by the same policy stages as the controller."""
