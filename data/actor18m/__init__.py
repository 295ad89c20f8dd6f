"""Actor-18M TFDS builder package (`tfds build data/actor18m`); see actor18m_dataset_builder.py.

Deliberately empty: `tfds build` imports `actor18m.actor18m_dataset_builder` itself, and importing
the builder here too would register it twice under two module names.
"""
