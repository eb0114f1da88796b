"""Mutation-testing tests for npo.env and npo.devices (provenance in a throwaway git repository)."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from npo import devices, env


def test_constants():
    assert env.DEFAULT_THREADS == 1
    assert env._THREAD_VARS == ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    assert env.PACKAGE_DIR.name == "npo" and (env.PACKAGE_DIR / "env.py").is_file()


def test_cores():
    assert env.cores() == len(os.sched_getaffinity(0))


def test_clamp_threads(monkeypatch):
    monkeypatch.setattr(env, "cores", lambda: 4)
    assert env.clamp_threads(1) == 1 and env.clamp_threads(4) == 4
    with pytest.warns(RuntimeWarning) as w:
        assert env.clamp_threads(5) == 4
    assert str(w[0].message) == "5 threads requested on a machine with 4 cores; using 4"
    # the caller's line (under mutmut, the trampoline that called it)
    assert w[0].filename in (__file__,) or "mutmut" in w[0].filename
    assert w[0].filename != env.__file__
    for bad, msg in ((0, "threads must be >= 1, got 0"), (-2, "threads must be >= 1, got -2"),
                     (True, "threads must be an integer, got True"),
                     (2.0, "threads must be an integer, got 2.0"),
                     ("2", "threads must be an integer, got '2'")):
        with pytest.raises(ValueError) as e:
            env.clamp_threads(bad)
        assert str(e.value) == msg


def test_pinned_threads_sets_and_restores(monkeypatch):
    monkeypatch.setattr(env, "cores", lambda: 8)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = env.threads()
    with env.pinned_threads(2) as k:
        assert k == 2 and env.threads() == 2
        assert [os.environ[v] for v in env._THREAD_VARS] == ["2", "2", "2"]
        with env.pinned_threads(1):
            assert env.threads() == 1
        assert env.threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
    assert env.threads() == before
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ
    with pytest.raises(ZeroDivisionError):
        with env.pinned_threads(3):
            raise ZeroDivisionError
    assert env.threads() == before and os.environ["OMP_NUM_THREADS"] == "7"


def test_pinned_threads_pins_torch_and_blas():
    torch = pytest.importorskip("torch")
    from threadpoolctl import threadpool_info

    torch.set_num_threads(2)
    try:
        with env.pinned_threads(1):
            assert torch.get_num_threads() == 1
            assert all(i["num_threads"] == 1 for i in threadpool_info()
                       if i["user_api"] == "blas")
        assert torch.get_num_threads() == 2
        assert env._set_torch_threads(1) == 2 and torch.get_num_threads() == 1
        env._current["threads"], old = 1, env._current["threads"]
        torch.set_num_threads(2)
        env.apply_torch_threads()
        assert torch.get_num_threads() == 1
        env._current["threads"] = None
        torch.set_num_threads(2)
        env.apply_torch_threads()
        assert torch.get_num_threads() == 2
        env._current["threads"] = old
    finally:
        torch.set_num_threads(1)


def test_set_torch_threads_without_torch(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert env._set_torch_threads(3) is None


def test_pin_process(monkeypatch):
    monkeypatch.setattr(env, "cores", lambda: 8)
    for v in env._THREAD_VARS:
        monkeypatch.setenv(v, "9")
    old = env._current["threads"]
    n = len(env._process_limiter)
    try:
        env._current["threads"] = None
        assert env.pin_process(1) == 1
        assert [os.environ[v] for v in env._THREAD_VARS] == ["1", "1", "1"]
        assert env.threads() == 1 and len(env._process_limiter) == n + 1
    finally:
        env._current["threads"] = old


def test_torch_available():
    import importlib.util

    assert env.torch_available() is (importlib.util.find_spec("torch") is not None)


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    (root / "npo").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    (root / "npo" / "f.py").write_text("x = 1\n")
    g = ["git", "-C", str(root)]
    subprocess.run(g + ["init", "-q"], check=True)
    subprocess.run(g + ["add", "."], check=True)
    subprocess.run(g + ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c1"],
                   check=True, env={**os.environ, "GIT_COMMITTER_DATE": "2024-05-06T07:08:09+00:00",
                                    "GIT_AUTHOR_DATE": "2024-05-06T07:08:09+00:00"})
    head = subprocess.run(g + ["rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    monkeypatch.setattr(env, "PACKAGE_DIR", root / "npo")
    for f in (env.project_root, env.git_commit, env.commit_date):
        f.cache_clear()
    yield root, head
    for f in (env.project_root, env.git_commit, env.commit_date):
        f.cache_clear()


def test_provenance_in_a_repository(repo):
    root, head = repo
    assert env.project_root() == root.resolve()
    assert env.git_commit() == head and not env.is_dirty()
    assert env.commit_date(head) == "2024-05-06T07:08:09+00:00"
    assert env.commit_date(head + "+dirty") == "2024-05-06T07:08:09+00:00"
    assert env.commit_date("unknown") == ""
    assert env.commit_date("0" * 40) == ""
    e = env.environment("torch:cpu")
    assert e["commit"] == head and e["commit_date"] == "2024-05-06T07:08:09+00:00"
    assert e["device"] == "torch:cpu"


def test_dirty_tree(repo):
    root, head = repo
    (root / "npo" / "f.py").write_text("x = 2\n")
    (root / "untracked.txt").write_text("u")
    assert env.git_commit() == head + "+dirty" and env.is_dirty()


def test_untracked_files_do_not_make_it_dirty(repo):
    root, head = repo
    (root / "untracked.txt").write_text("u")
    assert env.git_commit() == head


def test_not_the_own_repository(repo):
    root, _ = repo
    (root / "pyproject.toml").unlink()
    assert env.project_root() is None and env.git_commit() == "unknown"
    assert env.commit_date("abc") == ""


def test_package_inside_another_checkout(repo, monkeypatch):
    root, _ = repo
    inner = root / "vendor" / "npo"
    inner.mkdir(parents=True)
    (root / "vendor" / "pyproject.toml").write_text("")
    monkeypatch.setattr(env, "PACKAGE_DIR", inner)
    env.project_root.cache_clear()
    assert env.project_root() is None


def test_no_git_repository(tmp_path, monkeypatch):
    (tmp_path / "npo").mkdir()
    monkeypatch.setattr(env, "PACKAGE_DIR", tmp_path / "npo")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    env.project_root.cache_clear()
    env.git_commit.cache_clear()
    try:
        assert env.project_root() is None and env.git_commit() == "unknown"
    finally:
        env.project_root.cache_clear()
        env.git_commit.cache_clear()


def test_git_helper(tmp_path):
    with pytest.raises(subprocess.CalledProcessError):
        env._git(["rev-parse", "HEAD"], tmp_path)
    assert env._git(["--version"], tmp_path).startswith("git version")


def test_machine_name(monkeypatch):
    monkeypatch.setenv("NPO_MACHINE", "a" * 64)
    assert env.machine_name() == "a" * 64
    monkeypatch.setenv("NPO_MACHINE", "Lab-box_1.x+y")
    assert env.machine_name() == "Lab-box_1.x+y"
    for bad in ("a" * 65, "..", ".", "a b", "a/b", "ü"):
        monkeypatch.setenv("NPO_MACHINE", bad)
        with pytest.raises(ValueError) as e:
            env.machine_name()
        assert str(e.value) == (f"NPO_MACHINE {bad!r} is not a safe machine label: use letters, "
                                "digits, '_', '.', '+' or '-' (at most 64)")
    monkeypatch.delenv("NPO_MACHINE")
    monkeypatch.setattr(env.socket, "gethostname", lambda: "host-7")
    assert env.machine_name() == "host-7"
    monkeypatch.setenv("NPO_MACHINE", "")
    assert env.machine_name() == "host-7"
    monkeypatch.setattr(env.socket, "gethostname", lambda: "bad host")
    with pytest.raises(ValueError, match=r"^the host name 'bad host' is not a safe"):
        env.machine_name()
    monkeypatch.setattr(env.socket, "gethostname", lambda: "")
    assert env.machine_name() == "unknown"


def _cpuinfo():
    with open("/proc/cpuinfo") as f:
        return f.read()


def test_cpu_model_and_flags():
    text = _cpuinfo()
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                  if ln.startswith("model name")), None)
    if model is not None:
        assert env.cpu_model() == model
    flags_line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))),
                      None)
    if flags_line is not None:
        have = set(flags_line.split(":", 1)[1].split())
        wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile",
                  "amx_bf16", "neon", "asimd", "sve")
        assert env._cpu_flags() == tuple(w for w in wanted if w in have)


def test_blas_info_and_versions():
    from threadpoolctl import threadpool_info

    want = sorted(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
                  f"threads={i.get('num_threads')}" for i in threadpool_info()
                  if i.get("user_api") == "blas")
    assert env.blas_info() == want and want
    import numpy
    import scipy

    v = env.versions()
    assert v["python"] == platform.python_version()
    assert v["numpy"] == numpy.__version__ and v["scipy"] == scipy.__version__
    assert list(v)[0] == "python" and set(v) <= {"python", "numpy", "scipy", "pyamg", "pandas",
                                                   "torch", "petsc4py", "mpi4py"}
    assert env._dist_version("no-such-dist-xyz") is None


def test_fingerprint_and_environment(monkeypatch):
    fp = env.platform_fingerprint()
    assert fp["machine"] == platform.machine() and fp["cpu"] == env.cpu_model()
    assert fp["cpu_flags"] == list(env._cpu_flags())
    assert fp["blas"] == [b.rsplit(" threads=", 1)[0] for b in env.blas_info()]
    assert all("threads=" not in b for b in fp["blas"])
    assert "pandas" not in fp and fp["numpy"] == env.versions()["numpy"]
    monkeypatch.setenv("NPO_MACHINE", "m1")
    e = env.environment()
    assert list(e) == ["machine", "cpu", "cores", "blas", "threads", "device", "commit",
                       "commit_date", "versions"]
    assert e["machine"] == "m1" and e["device"] == "cpu" and e["cores"] == env.cores()
    assert e["blas"] == "; ".join(env.blas_info()) and e["versions"] == env.versions()
    monkeypatch.setitem(env._current, "threads", None)
    assert env.environment()["threads"] == 0
    monkeypatch.setitem(env._current, "threads", 3)
    assert env.environment()["threads"] == 3


# --- devices ------------------------------------------------------------------------------


@pytest.mark.parametrize("dev, torch_", [("cpu", False), ("torch:cpu", True), ("cuda", True),
                                         ("cuda:1", True)])
def test_is_torch(dev, torch_):
    assert devices.is_torch(dev) is torch_


@pytest.mark.parametrize("dev", ["gpu", "cuda:", "cuda:x", "torch", "CPU", "", None, 1,
                                 "torch:cuda", " cpu"])
def test_check_device_refuses(dev):
    with pytest.raises(ValueError) as e:
        devices.check_device(dev)
    assert str(e.value) == f"unknown device {dev!r}; expected cpu, torch:cpu or cuda[:k]"


def test_check_device_accepts_and_needs_torch(monkeypatch):
    for d in ("cpu", "torch:cpu", "cuda", "cuda:12"):
        assert devices.check_device(d) == d
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    assert devices.check_device("cpu") == "cpu"
    with pytest.raises(ValueError) as e:
        devices.check_device("cuda:0")
    assert str(e.value) == "device 'cuda:0' needs torch: install npo-bench[neural]"


def test_torch_device_and_synchronize(monkeypatch):
    torch = pytest.importorskip("torch")
    assert devices.torch_device("cpu") == torch.device("cpu")
    assert devices.torch_device("torch:cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        devices.torch_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError) as e:
            devices.torch_device("cuda:0")
        assert str(e.value) == "device 'cuda:0' requested but CUDA is not available to this torch"
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d: calls.append(d))
    devices.synchronize("cpu")
    devices.synchronize("torch:cpu")
    assert calls == []
    devices.synchronize("cuda:1")
    assert calls == [torch.device("cuda:1")]


def test_to_torch_csr_and_to_tensor():
    torch = pytest.importorskip("torch")
    A = sp.csr_matrix(np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 4.0]]))
    T = devices.to_torch_csr(A.tocoo(), "torch:cpu")
    assert T.layout == torch.sparse_csr and T.dtype == torch.float64 and T.shape == (3, 3)
    assert T.crow_indices().dtype == torch.int64 and T.col_indices().dtype == torch.int64
    np.testing.assert_array_equal(T.to_dense().numpy(), A.toarray())
    T32 = devices.to_torch_csr(A, "cpu", dtype=torch.float32)
    assert T32.dtype == torch.float32
    v = devices.to_tensor(np.arange(6.0)[::2], "torch:cpu")
    assert v.dtype == torch.float64 and v.is_contiguous() and v.tolist() == [0.0, 2.0, 4.0]
    assert devices.to_tensor([1, 2], "cpu", dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown device"):
        devices.to_tensor(np.ones(2), "gpu")


def test_pin_process_limits_blas_threads(monkeypatch):
    from threadpoolctl import threadpool_info, threadpool_limits

    monkeypatch.setattr(env, "cores", lambda: 8)
    old = env._current["threads"]
    n = len(env._process_limiter)
    with threadpool_limits(limits=2):
        try:
            env.pin_process(1)
            assert all(i["num_threads"] == 1 for i in threadpool_info()
                       if i["user_api"] == "blas")
            assert len(env._process_limiter) == n + 1
            env._process_limiter[-1].restore_original_limits()
        finally:
            env._current["threads"] = old


def test_cores_fallback_clamp_edge_and_mpi4py_version(monkeypatch):
    import importlib.util
    import warnings

    def no_affinity(pid):
        raise OSError("no affinity here")

    monkeypatch.setattr(env.os, "sched_getaffinity", no_affinity)
    monkeypatch.setattr(env.os, "cpu_count", lambda: None)
    assert env.cores() == 1
    monkeypatch.setattr(env, "cores", lambda: 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert env.clamp_threads(4) == 4  # exactly the core count: no warning
    if importlib.util.find_spec("mpi4py") is not None:
        assert "mpi4py" in env.versions()
