"""Offline data tools, imported as a package from the repository root (`python -m data.X`):

  synthetic_actors, render_actor   synthetic actors rendered into an Actor-18M style manifest
  actor18m/                        the TFDS builder (`tfds build data/actor18m`, with or without
                                   Beam) and its row validation
  build_actor18m                   the single-process build with a JSON summary
"""
