"""wildactor_jax: WildActor identity-preserving human video generation in JAX/Flax NNX."""
from setuptools import find_packages, setup

# Pinned to versions tested together; bump deliberately, all at once.
# jax and jaxlib move together (and with the `tpu` extra's libtpu below).
JAX_VERSION = "0.10.2"
INSTALL_REQUIRES = [
    f"jax=={JAX_VERSION}",
    f"jaxlib=={JAX_VERSION}",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "einops==0.8.2",
    "ml-collections==1.1.0",
    "clu==0.0.12",
    # 12.x, not 13: apache-beam (the `data` extra) requires pillow>=12.1.1,<13.
    "pillow==12.3.0",
    "absl-py==2.5.1",
    "numpy",
    "safetensors==0.8.0",
    "imageio==2.38.1",
    "imageio-ffmpeg==0.8.1",
    "tokenizers==0.23.3",
    "tqdm",
    "pyyaml==6.0.4",  # story files (python -m wildactor_jax.story)
    # clu.metric_writers imports TensorFlow; the input pipeline never does.
    "tensorflow-cpu==2.21.0",
    "tensorboard==2.21.0",  # clu's summary writer needs it; tensorflow-cpu no longer pulls it
]

EXTRAS = {
    # torch/diffusers/transformers are the numerical oracle for our ports, never a runtime dep.
    # torch is pinned to the CPU build present on every machine (unpinned pulls GB of CUDA).
    "test": [
        "pytest==9.2.0",
        "pytest-xdist==3.8.0",  # make test runs two workers (Makefile)
        "torch==2.13.0",
        "diffusers==0.42.1",
        "transformers==5.24.0",
        "sentencepiece==0.2.3",
        "matplotlib",
        # tests/test_remote_storage.py: a GCS emulator on loopback, and epath's fsspec backend
        # for gs:// (TensorFlow's GCS client, epath's default, cannot be pointed at an emulator).
        "gcp-storage-emulator==2026.7.19",
        "gcsfs==2026.10.1",
    ],
    # What a Cloud TPU VM runs (the launchers install `.[tpu]`), and deviceless TPU compilation
    # (launch/aot_compile.py) on a CPU machine. jax's own `tpu` extra names the libtpu series it
    # was released with (jax 0.10.2: libtpu 0.0.42.*), so pip refuses a jax/libtpu bump that jax
    # does not declare compatible; the exact libtpu is the newest of that series.
    "tpu": [f"jax[tpu]=={JAX_VERSION}", "libtpu==0.0.42.1"],
    # Offline dataset building only. apache-beam: `tfds build --beam_pipeline_options=...`;
    # mlcroissant: the `tfds` command imports it (and apache_beam) at start-up.
    "data": ["tensorflow-datasets==4.9.10", "array-record==0.8.6", "apache-beam==2.77.0",
             "mlcroissant==1.1.1"],
}

setup(
    name="wildactor_jax",
    version="0.1.0",
    description="WildActor (identity-preserving human video generation) in JAX/Flax NNX",
    packages=find_packages(include=["wildactor_jax", "wildactor_jax.*"]),
    # The CPU demo's pretrained parts (wildactor_jax/demo/assets/: about 8 MB, sha256-checked).
    package_data={"wildactor_jax.demo": ["assets/*.npz", "assets/assets.json"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
