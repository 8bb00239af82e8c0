import pytest


@pytest.fixture(scope="session")
def local_ray():
    """One small local Ray for the whole test session (starting Ray takes seconds), started as autometa does:
    bound to loopback, its processes ended with the session (or by the reaper if the session is killed).
    It declares one GPU, which need not exist: Ray schedules by declared resources, so fractional-GPU
    trials can be checked on a CPU machine (tests that ask for no GPU are unaffected)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    from autometa.search._ray import start_local_ray

    instance = None if ray.is_initialized() else start_local_ray(num_cpus=2, object_store_memory=100 * 1024 * 1024,
                                                                          num_gpus=1)
    yield ray
    if instance is not None:
        instance.stop()
