"""The Ray Serve application (a preprocessor in front of a batched classifier), its inference backends,
its HTTP schema and its client. Image and model code lives in the leaf package `vision`."""
