"""Plant bugs one at a time, run the test that should catch each, revert (issue 14; run from anywhere,
never while a run of this tree is starting: the source files are changed for a few seconds each).

    python benchmarks/modelbased/planted_bugs.py     # about 12 pytest runs, ~1 CPU-min
"""
# ruff: noqa: E501
# (the table below holds source lines verbatim)
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUGS = [
    ("autometa/learners/_memory.py", "order = torch.argsort(usage, dim=-1, stable=True)[:, :count]",
     "order = torch.argsort(-usage, dim=-1, stable=True)[:, :count]", "lru_memory", "LRU erases the most-used slots"),
    ("autometa/learners/_memory.py", "    new_read = cosine_read_weights(keys, memory)\n    reads = new_read @ memory\n",
     "    new_read = cosine_read_weights(keys, memory * 0 + memory.detach() * (1 - lu)[..., None])\n    reads = new_read @ memory\n",
     "lru_memory", "reads weighted by the memory before the write"),
    ("autometa/learners/_memory.py", "usage = decay * usage + new_read.sum(1) + write_weights.sum(1)",
     "usage = usage + new_read.sum(1) + write_weights.sum(1)", "lru_memory", "usage never decays"),
    ("autometa/learners/_memory.py", "previous = F.one_hot(labels[:, :-1], self.ways)",
     "previous = F.one_hot(labels[:, 1:], self.ways)", "one_step_late", "label of step t shown at step t"),
    ("autometa/tasks/_sequence.py", ".tril()", ".tril(-1)", "presentation_index", "presentation count off by one"),
    ("autometa/learners/_cnaps.py", "weight = members.shape[0] / (members.shape[0] + 1.0)",
     "weight = 1.0 / (members.shape[0] + 1.0)", "mahalanobis", "lambda_k = 1/(n_k+1)"),
    ("autometa/learners/_cnaps.py", "return centred.T @ centred / max(n - 1, 1)", "return centred.T @ centred / n",
     "mahalanobis or covariance", "biased covariance"),
    ("autometa/learners/_cnaps.py", "+ beta * eye)", "+ 0.1 * beta * eye)", "mahalanobis", "beta I scaled"),
    ("autometa/learners/_cnaps.py", "return -(diff.transpose(1, 2) * solved).sum(1).T",
     "return -(diff.transpose(1, 2) * solved).sum(1).T / 2", "mahalanobis", "half the squared distance"),
    ("autometa/learners/_cnaps.py", "        if gammas is not None:\n            x = x * gammas[b].view(1, -1, 1, 1) + betas[b].view(1, -1, 1, 1)\n        x = F.relu(x)",
     "        x = F.relu(x)\n        if gammas is not None:\n            x = x * gammas[b].view(1, -1, 1, 1) + betas[b].view(1, -1, 1, 1)",
     "film_sits", "FiLM after the ReLU"),
    ("autometa/learners/_metanet.py", "error = torch.softmax(logits, -1) - F.one_hot(labels, logits.shape[-1]).to(logits.dtype)",
     "error = torch.softmax(logits, -1) - F.one_hot(labels, logits.shape[-1]).to(logits.dtype).roll(1, -1)",
     "head_gradients", "head gradient with the wrong class"),
    ("autometa/learners/_metanet.py", "apart = F.relu(margin - (squared + 1e-12).sqrt()).pow(2)",
     "apart = F.relu(margin - squared).pow(2)", "contrastive", "margin on the squared distance"),
]
for path, old, new, k, what in BUGS:
    f = ROOT / path
    text = f.read_text()
    assert text.count(old) == 1, (path, old)
    f.write_text(text.replace(old, new))
    try:
        files = "tests/tasks/test_sequence.py" if "sequence.py" in path else "tests/learners/test_model_based.py"
        r = subprocess.run([sys.executable, "-m", "pytest", files, "-p", "no:cacheprovider", "-q", "-k", k, "-x"],
                           cwd=ROOT, capture_output=True, text=True)
        last = [line for line in r.stdout.splitlines() if "passed" in line or "failed" in line or "error" in line][-1:]
        print(f"{'CAUGHT' if r.returncode else 'MISSED'} | {what} | {path} | -k {k} | {last}", flush=True)
    finally:
        f.write_text(text)
