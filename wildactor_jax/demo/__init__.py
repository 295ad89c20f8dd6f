"""The CPU demo (`python -m wildactor_jax.demo`, `make demo`): the whole system end to end on the
embedded synthetic actors. Demo-only code lives here; the library never imports it."""
