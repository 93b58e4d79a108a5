"""The parity data is part of the project: tests/data/parity/golden holds what the tests compare with, and the
project's own stand-in generator rebuilds the weights those outputs were computed with, bit for bit."""
import hashlib
import os

import pytest
import torch

from shared_data import GOLDEN_DIR, stand_in_weights

# sha256 of the generated tensors (sorted keys, float32 bytes), taken from the generator the golden files were made
# with (shared/tools/golden.py) for each file's own key table and seed
WEIGHTS_SHA256 = {
    "dsan_t": (526, "48feffe970c22655c1dd0d7704a9c19a182f54cfdd426c466d1611a48f7842d0"),  # BatchNorm running stats
    "dat_pp_tiny": (593, "fac45fbaf3a6729d53dd26f421a557857b9d61f04168c5b3c1386de5630e8a0d"),
    "cls/davit_tiny": (212, "1f5014a4546b3f5cdb214f7594b15dcf31432aa6545d4d3b0d2525a7141070ac"),
}


@pytest.mark.parametrize("name", sorted(WEIGHTS_SHA256))
def test_stand_in_weights_are_the_golden_files_weights(name):
    g = torch.load(os.path.join(GOLDEN_DIR, f"{name}.pt"), weights_only=False)
    w = stand_in_weights(g["keys"], g["seed"])
    digest = hashlib.sha256(b"".join(w[k].numpy().tobytes() for k in sorted(w))).hexdigest()
    assert (len(w), digest) == WEIGHTS_SHA256[name]


def test_every_golden_file_is_in_the_repository():
    """The files the parity tests read, each with the notes that say how it was made."""
    names = {os.path.relpath(os.path.join(d, f), GOLDEN_DIR) for d, _, fs in os.walk(GOLDEN_DIR) for f in fs}
    expected = {"dat_pp_tiny.pt", "davit_tiny.pt", "dcnv3.pt", "dsan_t.pt", "dscn.pt", "ms_deform_attn.pt",
                "vit_adapter_tiny.pt", "cls/dat_tiny.pt", "cls/dat_pp_tiny.pt", "cls/davit_tiny.pt", "cls/dsan_t.pt",
                "keys/dat_keys.json", "keys/davit_keys.json", "keys/dsan_keys.json", "keys/vit_adapter_keys.json"}
    assert expected <= names
    for name in sorted(n for n in expected if n.endswith(".pt")):
        assert len(torch.load(os.path.join(GOLDEN_DIR, name), weights_only=False)["notes"]) > 100, name
