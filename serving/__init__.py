"""The model, its pre/post-processing, the inference backends, the Ray Serve application and its client."""
