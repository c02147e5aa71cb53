"""What the process may use (issue 23, 8) and ``precision = "auto"`` (issue 25): the default
torch threads are the cores this process may use, divided among its processes; auto picks
bf16 only where the CPU multiplies bf16 itself, and bf16 finds the entities fp32 finds."""

import pytest
import torch
from typer.testing import CliRunner

from dt4h_spacy import inference, runtime
from dt4h_spacy.cli import app


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A machine of 16 cores torch would use, this process allowed 8 of them, no CPU quota."""
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(runtime, "TORCH_DEFAULT_THREADS", 16)
    monkeypatch.setattr(runtime, "CPU_QUOTA_FILE", tmp_path / "cpu.max")
    return tmp_path / "cpu.max"


def test_default_threads_are_the_usable_cores_divided_among_processes(machine):
    assert runtime.usable_cores() == 8
    assert [runtime.default_threads(n) for n in (1, 2, 3, 8, 20)] == [8, 4, 2, 1, 1]


def test_a_cgroup_cpu_quota_caps_the_default(machine):
    machine.write_text("250000 100000\n")  # 2.5 CPUs: 3 threads
    assert runtime.default_threads() == 3
    machine.write_text("max 100000\n")
    assert runtime.default_threads() == 8


def test_torchs_own_count_caps_the_default(machine, monkeypatch):
    monkeypatch.setattr(runtime, "TORCH_DEFAULT_THREADS", 4)  # physical cores, or OMP_NUM_THREADS=4
    assert runtime.default_threads() == 4


def test_the_tagger_runs_on_the_default_threads_unless_told(make_nlp, monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(inference, "default_threads", lambda: 1)
        make_nlp("es")("Paciente con asma.")
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        make_nlp("es", num_threads=2)("Paciente con asma.")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("flags, picked", [
    ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "bf16"),
    ({"avx2", "amx_tile", "amx_bf16", "amx_int8"}, "bf16"),
    ({"avx2", "avx512f", "avx512_vnni"}, "fp32"),
    (set(), "fp32"),
])
def test_auto_picks_bf16_only_where_the_cpu_has_bf16_instructions(monkeypatch, flags, picked):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(flags))
    assert runtime.auto_precision(torch.device("cpu")) == picked
    assert runtime.auto_precision(torch.device("cpu"), quantize=True) == "fp32"


def test_the_cpu_flags_are_read_from_cpuinfo():
    flags = runtime.cpu_flags()
    assert isinstance(flags, frozenset)
    if flags:
        assert "fpu" in flags or "fp" in flags or "neon" in flags or "asimd" in flags


def entities(doc):
    return [(s.start_char, s.end_char, s.label_) for s in doc.spans["dt4h"]]


@pytest.mark.parametrize("flags, resolved", [({"avx512_bf16"}, "bf16"), ({"avx2"}, "fp32")])
def test_auto_in_the_component_resolves_at_load_and_bf16_agrees_with_fp32(
    make_nlp, trained_checkpoint, monkeypatch, flags, resolved
):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(flags))
    text = "Hoy la paciente presenta neumonía y diabetes.\nSin asma ni miocarditis aguda."
    fp32 = entities(make_nlp("es", checkpoint=trained_checkpoint)(text))
    nlp = make_nlp("es", checkpoint=trained_checkpoint, precision="auto")
    assert entities(nlp(text)) == fp32 and len(fp32) >= 2
    assert nlp.get_pipe("dt4h_disease").tagger.precision == resolved
    assert nlp.get_pipe("dt4h_disease").cfg["precision"] == "auto"  # a saved pipeline decides again where it loads


def test_cli_accepts_precision_auto_and_documents_the_thread_default(tmp_path, tiny_checkpoint, tiny_base_model):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "nota.txt").write_text("Paciente con asma.", encoding="utf-8")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "in"), str(tmp_path / "out.tsv"), "--lang", "es",
                                      "--checkpoint", str(tiny_checkpoint), "--base-model", str(tiny_base_model),
                                      "--precision", "auto"])
    assert result.exit_code == 0, result.output
    helped = " ".join(CliRunner().invoke(app, ["predict", "--help"]).output.split())
    assert "Default: the cores it may use (CPU affinity, a cgroup quota); with --n-process, one per worker" in helped
    assert "auto" in helped
