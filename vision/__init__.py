"""The leaf package of pure image and model code: decoding and validating frames, pre-processing,
quality features, the generated camera, the model definition, training, the registry, artifacts and
their signatures. It imports `infra` and numeric/ML libraries, never Ray, Temporal or FastAPI, so the
worker, the API, the Serve replicas and the benchmarks can all use it."""
