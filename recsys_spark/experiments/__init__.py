"""Online experiments: A/B bucket assignment per layer (`buckets`) and business metrics per variant
(`business`). Plain DataFrame→DataFrame functions, each module with its `run(cfg, spark, lake)` job."""
