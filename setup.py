"""lakestory: from landed files to production models on Apache Spark and Delta Lake."""

from setuptools import find_packages, setup

# Pinned to versions checked to fit together. delta-spark caps pyspark at 4.2.0. Its JVM jars
# (io.delta:delta-spark_4.2_2.13) are served from Maven Central up to 4.4.0, not 4.4.1, and the
# pip package asks for jars of its own version, so both are 4.4.0. pyspark 4.2 does not yet
# fully support pandas 3.
INSTALL_REQUIRES = [
    "pyspark==4.2.0",
    "delta-spark==4.4.0",
    "mlflow==3.17.2",
    "torch==2.15.0",
    "onnx==1.23.2",
    "onnxruntime==1.31.1",
    "onnxscript==0.7.2",
    "numpy>=2.0,<3",
    "pandas>=2.2,<3",
    "pyarrow>=18",
    "pyyaml==6.0.3",
    "pydantic==2.14.3",
    "faker==40.54.0",
    # binary sources: image, audio and text metadata at ingest
    "pillow==13.0.0",
    "soundfile==0.14.0",
    "charset-normalizer==3.5.3",
    # the digits demo dataset (sklearn ships it; mlflow already depends on scikit-learn)
    "scikit-learn==1.9.1",
    # plots of `lakestory profile` (mlflow already pulls it in; pinned as we use it directly)
    "matplotlib==3.11.2",
    # `lakestory tune`: TPE search over the model's settings
    "optuna==5.0.0",
    # the console's spinner while a long stage runs (lakestory.console)
    "rich==15.0.0",
]

DEV_REQUIRES = [
    "pytest==9.2.0",
    "chispa==0.12.0",
    "ruff==0.17.5",
    "mypy==2.4.1",
    # the map of the layers (pyproject.toml [tool.importlinter]), checked by `lint-imports`
    "import-linter==2.17",
    "types-PyYAML",
    # executing notebooks/ in a test (a kernel from this environment)
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
]

setup(
    name="lakestory",
    version="0.1.0",
    description="Data from its sources to production models on Apache Spark and Delta Lake",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": DEV_REQUIRES},
    entry_points={"console_scripts": ["lakestory=lakestory.cli:main"]},
)
