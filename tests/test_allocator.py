"""A CPU tagger keeps freed buffers for reuse instead of page-faulting them back every window."""

import os
import subprocess
import sys
import textwrap

import pytest

from dt4h_spacy.allocator import ENVIRONMENT, on_glibc, user_chose_allocator

pytestmark = pytest.mark.skipif(not on_glibc(), reason="a glibc malloc setting")

# What a forward pass does to malloc, in small: several multi-MB blocks touched, then all freed.
FAULTS = textwrap.dedent(
    """
    import resource, numpy

    def faults():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            blocks = [numpy.ones(1_000_000) for _ in range(4)]
            del blocks
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults()
    print(faults())
    """
)


def minor_faults(setup: str, **env: str) -> int:
    environ = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    out = subprocess.run(
        [sys.executable, "-c", setup + FAULTS], env={**environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


def test_a_cpu_pipeline_stops_the_page_faults_of_freed_buffers(tiny_base_model, tiny_checkpoint):
    build = textwrap.dedent(
        f"""
        import spacy
        nlp = spacy.blank("es")
        nlp.add_pipe("dt4h_disease", config={{"checkpoint": {str(tiny_checkpoint)!r}, "base_model": {str(tiny_base_model)!r}}})
        nlp("Paciente con fiebre.")
        """
    )
    plain = minor_faults("")
    assert plain > 10_000  # 40 x 8 MB handed back to the kernel and faulted in again
    assert minor_faults(build) < plain / 10


def test_the_users_own_malloc_setting_is_left_alone():
    keep = "from dt4h_spacy.allocator import keep_freed_memory\nassert not keep_freed_memory()\n"
    assert minor_faults(keep, MALLOC_TRIM_THRESHOLD_="131072") > 10_000


def test_keep_freed_memory_says_it_took_effect():
    keep = "from dt4h_spacy.allocator import keep_freed_memory\nassert keep_freed_memory() and keep_freed_memory()\n"
    assert minor_faults(keep) < 1_000


@pytest.mark.parametrize(
    "name, value",
    [("MALLOC_MMAP_THRESHOLD_", "131072"), ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072"),
     ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")],
)
def test_each_way_of_choosing_an_allocator_counts(monkeypatch, name, value):
    for other in ENVIRONMENT:
        monkeypatch.delenv(other, raising=False)
    assert not user_chose_allocator()
    monkeypatch.setenv(name, value)
    assert user_chose_allocator()
