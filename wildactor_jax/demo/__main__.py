"""python -m wildactor_jax.demo --out demo_out [--quick | --ablations | --few-step]: the demo
(wildactor_jax/demo/pipeline.py), its ablations (wildactor_jax/demo/ablations.py) or, after it,
the few-step student against its teacher (wildactor_jax/demo/few_step.py)."""
import sys

from wildactor_jax.demo import ablations, pipeline


def main(argv=None) -> int:
  if "--few-step" in (sys.argv[1:] if argv is None else argv):
    from wildactor_jax.demo import few_step
    return few_step.main(argv)
  args = pipeline.parse_args(argv)
  return ablations.run(args) if args.ablations else pipeline.run(args)


if __name__ == "__main__":
  sys.exit(main())
