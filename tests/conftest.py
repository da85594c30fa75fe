import pytest


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A small demo corpus shared by the end-to-end tests: 5 identities, one clip per category each."""
    from avbench.demo import generate_corpus

    root = tmp_path_factory.mktemp("demo")
    generate_corpus(root, identities=5, real_per_identity=1, seconds=1.2, size=128)
    return root
