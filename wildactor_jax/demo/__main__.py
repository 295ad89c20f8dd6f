"""python -m wildactor_jax.demo --out demo_out [--quick | --ablations]: the demo
(wildactor_jax/demo/pipeline.py) or its ablations (wildactor_jax/demo/ablations.py)."""
import sys

from wildactor_jax.demo import ablations, pipeline


def main(argv=None) -> int:
  args = pipeline.parse_args(argv)
  return ablations.run(args) if args.ablations else pipeline.run(args)


if __name__ == "__main__":
  sys.exit(main())
