import pytest


@pytest.fixture(scope="session")
def local_ray():
    """One small local Ray for the whole test session (starting Ray takes seconds)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
