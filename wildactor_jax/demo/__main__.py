"""python -m wildactor_jax.demo --out demo_out [--quick]: see wildactor_jax/demo/pipeline.py."""
from wildactor_jax.demo.pipeline import main

if __name__ == "__main__":
  main()
