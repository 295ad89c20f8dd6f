"""Training input, one module per job (import the module you need; this file imports nothing):

  schema              the batch: TASKS, keys, dtypes, per-example shapes (defined once)
  records             the encoded record format (bytes <-> arrays), written by `encode`
  viewpoint_sampling  the viewpoint-adaptive choice of references
  splits              the identity-disjoint train/test rule (dataset builder and evaluation)
  records_source      the Grain pipeline: encoded ArrayRecords -> batches
  random_source       random batches in the same schema (tiny configs, tests, benchmarks)
  batches             what the trainer calls: create_source, to_global, abstract_batch
"""
