"""Every figure belongs to its record and its hardware: outputs named by identity and checked by hash,
GPU models never compared, suspect configurations never recommended."""

import re

from helpers import explore, figures, grid, outputs, records, report
from helpers import params as P
from helpers.cells import Cell, cells


def _params(tmp_path, **kw):
    base = dict(model="pixart", qtypes=["none", "int8"], quantize_te=[False], fuse_qkv=[False], warmup=0, repeats=1,
                out_dir=str(tmp_path), device="cpu")  # fmt: skip
    return P.validate({**base, **kw})


def test_two_parameter_sets_in_one_out_dir_keep_their_own_images_and_references(tmp_path):
    first = grid.run_grid(_params(tmp_path), progress=False)
    kept = {r.qtype: (tmp_path / r.image_path).read_bytes() for r in first}
    second = grid.run_grid(_params(tmp_path, steps=4), progress=False)
    assert [r.status for r in first + second] == ["ok"] * 4, [r.error for r in first + second]
    assert {r.image_path for r in first}.isdisjoint(r.image_path for r in second)
    for r in first:  # byte for byte what the first run wrote, and its hash still matches
        assert (tmp_path / r.image_path).read_bytes() == kept[r.qtype]
        assert outputs.image_problem(tmp_path, r) is None
    # fidelity compares each run's int8 with its own run's none: recompute it from the right files
    from helpers import fidelity

    for rows in (first, second):
        none, int8 = rows
        images, latents = outputs.load(tmp_path, int8)
        ref_images, ref_latents = outputs.load(tmp_path, none)
        expected = fidelity.compare(images[0], ref_images[0], latents[0], ref_latents[0])
        assert int8.latent_rel_error == expected["latent_rel_error"] and int8.ssim == expected["ssim"]
    assert first[1].latent_rel_error != second[1].latent_rel_error


def test_a_file_that_is_not_its_records_is_refused_by_the_report_and_the_explorer(tmp_path):
    rows = grid.run_grid(_params(tmp_path, qtypes=["none"]), progress=False)
    (tmp_path / rows[0].image_path).write_bytes((tmp_path / rows[0].image_path).read_bytes() + b"\0")
    problem = outputs.image_problem(tmp_path, rows[0])
    assert problem and "SHA-256 differs" in problem
    fig = figures.image_grid(rows, str(tmp_path))
    assert any("SHA-256" in t.get_text() for ax in fig.axes for t in ax.texts), "the grid shows why, not the image"
    box = explore.explorer(rows, str(tmp_path))
    shown = [c.value for c in box.children[-1].children[0].children if hasattr(c, "value") and isinstance(c.value, str)]
    assert any("SHA-256 differs" in v for v in shown)


def test_records_of_an_earlier_version_still_load_and_show_their_images(tmp_path):
    import shutil

    rows = grid.run_grid(_params(tmp_path, qtypes=["none"]), progress=False)
    old = rows[0]
    legacy = tmp_path / "images" / "pixart_bf16" / "none_qte0_fuse0_bs1.png"
    shutil.copy(tmp_path / old.image_path, legacy)
    old.image_path, old.image_paths, old.image_sha256 = legacy.relative_to(tmp_path).as_posix(), [], []
    again = records.Record.from_dict({k: v for k, v in records.Record(**vars(old)).__dict__.items()})
    assert outputs.image_problem(tmp_path, again) is None
    assert outputs.files(again)[1] == "latents/pixart_bf16/none_qte0_fuse0_bs1.safetensors"


def _record(**kw):
    base = dict(
        model="pixart", checkpoint="ck", preset="full", device="cuda", dtype="bf16", qtype="int8",
        quantize_te=False, fuse_qkv=False, exclude=[], batch_size=1, steps=20, height=1024, width=1024,
        guidance_scale=4.5, prompts=["p"], seed=0, warmup=1, repeats=3, gpu="NVIDIA H100 80GB HBM3",
        compute_capability="9.0", memory_gb=10.0, latency_s=2.0, latency_min_s=1.9, latency_max_s=2.1, ssim=0.9, psnr_db=30.0, latent_rel_error=0.05,
    )  # fmt: skip
    return records.Record(**{**base, **kw})


def test_records_of_two_gpu_models_are_never_in_one_table(tmp_path):
    h100 = [_record(qtype="none", memory_gb=12.0, latency_s=1.5, ssim=1.0, latent_rel_error=0.0, identical=True),
            _record(memory_gb=8.0, latency_s=1.9)]  # fmt: skip
    a100 = [_record(qtype="none", gpu="NVIDIA A100-SXM4-80GB", compute_capability="8.0", memory_gb=12.0,
                    latency_s=3.0, latent_rel_error=0.0, identical=True),
            _record(gpu="NVIDIA A100-SXM4-80GB", compute_capability="8.0", memory_gb=7.0, latency_s=2.5)]  # fmt: skip
    assert h100[0].identity_key() != a100[0].identity_key(), "the GPU model is part of a record's identity"
    tables = report.tables_of(h100 + a100)
    assert [(bs, gpu, [r.gpu for r in sub]) for bs, gpu, sub in tables] == [
        (1, "NVIDIA H100 80GB HBM3 (compute capability 9.0)", ["NVIDIA H100 80GB HBM3"] * 2),
        (1, "NVIDIA A100-SXM4-80GB (compute capability 8.0)", ["NVIDIA A100-SXM4-80GB"] * 2),
    ]
    md = report.results_markdown([h100 + a100])
    assert md.count("## Pixart - Batch Size: 1, Data Type: bf16 - GPU: ") == 2
    page = report.report_html(str(tmp_path), [h100 + a100])
    assert len(re.findall(r'<h2 id="pixart_bf16-bs1-NVIDIA-[^"]*">', page)) == 2
    # each GPU's INT8 is compared with its own NONE: the summary's savings are per GPU
    assert ">4.000<" in page and ">5.000<" in page, "12 - 8 on the H100, 12 - 7 on the A100"


def test_a_grid_reads_back_every_gpu_models_records(tmp_path):
    p = P.validate({"model": "pixart", "qtypes": ["none"], "quantize_te": [False], "fuse_qkv": [False],
                    "out_dir": str(tmp_path), "device": "cpu"})  # fmt: skip
    rows = grid.run_grid(p, progress=False)
    other = records.Record(**{**vars(rows[0]), "device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    records.append(grid.results_path(p), other)
    both = grid.grid_records(P.validate({**dict(p), "device": "auto"}))
    assert [r.gpu for r in both] == ["NVIDIA H100 80GB HBM3"], "auto prefers CUDA's records"
    assert grid.grid_records(p) == rows, "the CPU's records are read where the CPU was asked for"


def test_a_suspect_configuration_is_marked_everywhere_and_never_recommended(tmp_path):
    none = _record(qtype="none", memory_gb=12.0, latency_s=1.5, ssim=1.0, latent_rel_error=0.0, identical=True)
    fp8 = _record(qtype="fp8", memory_gb=7.0, latency_s=1.0, ssim=0.05, psnr_db=8.0, latent_rel_error=1.3)
    int8 = _record(memory_gb=8.0, latency_s=1.8)
    assert records.suspect(fp8) and not records.suspect(int8) and not records.suspect(none)
    rows = [none, int8, fp8]
    assert figures.recommended(rows) == [int8, none], "fp8 would dominate both, but it is suspect"
    assert records.labels(fp8)[0] == "FP8 (suspect)"
    md = report.results_markdown([rows])
    assert "| FP8 (suspect) |" in md and "Recommended (no other configuration uses less memory and less time): " \
        "INT8 / TE No / Fuse No; NONE / TE No / Fuse No" in md  # fmt: skip
    page = report.report_html(str(tmp_path), [rows])
    summary = page[page.index('id="summary"') : page.index('<table class="sortable"')]
    assert "Suspect, never recommended" in summary and "<td>FP8 (suspect)</td>" not in summary
    assert '<tr class="suspect"><td>FP8 (suspect)</td>' in page
    assert "Suspect" in explore._summary(fp8) and "Suspect" not in explore._summary(int8)


def test_the_peak_column_says_what_its_figure_is():
    cpu = _record(device="cpu", gpu=None, compute_capability=None)
    assert report.PEAK_CPU in report.html_columns([cpu]) and report.PEAK_CUDA not in report.html_columns([cpu])
    cuda = _record()
    assert report.PEAK_CUDA in report.html_columns([cuda]) and "Peak reserved (GB)" in report.html_columns([cuda])
    assert records.peak_label(cpu) != records.peak_label(cuda)


def test_output_names_follow_the_whole_identity():
    a = _record()
    assert outputs.names(a) == outputs.names(_record())
    for other in (_record(steps=4), _record(height=512), _record(prompts=["q"]), _record(preset="random-full"),
                  _record(checkpoint="other"), _record(gpu="NVIDIA A100-SXM4-80GB"), _record(compute_capability="8.0")):
        assert outputs.names(a)[0][0] != outputs.names(other)[0][0]


def test_a_process_that_finds_another_gpu_than_planned_records_an_error_not_a_figure(tmp_path):
    from helpers.pipelines import call_settings, checkpoint_name

    p = _params(tmp_path, qtypes=["none"])
    planned = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}  # this CPU process sees none
    outcome = grid.execute(p, checkpoint_name(p), "cpu", call_settings(p), planned, cells(p)[0])
    r = outcome.record
    assert r.status == "error" and "planned for" in r.error and r.memory_gb is None and not outcome.images
    assert (r.gpu, r.compute_capability) == ("NVIDIA H100 80GB HBM3", "9.0"), "filed under the planned identity"
