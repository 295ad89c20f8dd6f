"""Actor-Bench at our scale: identity embedder, metrics, bootstrap intervals, fidelity and
sampling-free diagnostics (docs/method.md; the WildActor paper's evaluation protocol)."""
