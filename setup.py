"""tfjest: learnability-based data selection (JEST) as a tf.data transformation."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent
_VERSION = {}
exec((_HERE / "tfjest" / "version.py").read_text(), _VERSION)  # pylint: disable=exec-used

setuptools.setup(
    name="tfjest",
    version=_VERSION["__version__"],
    description="Joint example selection (JEST) and learnability scoring for tf.data and Keras.",
    long_description=(_HERE / "README.md").read_text() if (_HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["tfjest", "tfjest.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "tensorflow-text>=2.21,<2.22",
        "tensorflow-datasets>=4.9.10",
        "absl-py",
        "tensorboard",
        "importlib_resources",
    ],
    extras_require={
        "tests": ["pytest", "hypothesis", "matplotlib", "dill"],
    },
    license="Apache-2.0",
)
