"""Makes torch_layouts{,_big}.pt and torch_layouts.npz (run once, with torch installed).

The tests read these files without torch: they are what ``torch.save`` itself writes for the
layouts a checkpoint reader must handle — float32 / bfloat16 / float16 / int64 / bool storages,
a transposed view (strides), a slice (storage offset), two names sharing one storage (tied
weights), a 0-d and an empty tensor, and a Module state_dict (an OrderedDict carrying
``_metadata``). ``torch_layouts_big.pt`` is the same archive rewritten big-endian (torch only
writes the machine's byte order). The .npz holds the expected values (bfloat16 as float32, exact).

  .venv/bin/pip install torch==2.13.0 && .venv/bin/python tests/data/make_torch_layouts.py
"""

import zipfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def main():
  torch.manual_seed(0)
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6) - 11.5
  sd = torch.nn.Linear(3, 2).state_dict()  # an OrderedDict with _metadata
  sd.update({
      "base": base, "transposed": base.t(), "slice": base[1:3, 2:5], "tied": base,
      "bf16": torch.randn(3, 5).to(torch.bfloat16), "f16": torch.randn(7).half(),
      "i64": torch.arange(5) * 10**12 - 3, "bool": torch.tensor([True, False, True]),
      "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 3),
  })
  little = HERE / "torch_layouts.pt"
  torch.save(sd, little)
  np.savez(HERE / "torch_layouts.npz",
           **{k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in sd.items()})
  # Storage keys are given in pickling order, one per distinct storage.
  dtypes = {}
  for v in sd.values():
    ptr = v.untyped_storage().data_ptr()
    if ptr not in {p for p, _ in dtypes.values()}:
      dtypes[str(len(dtypes))] = (ptr, v.dtype)
  with zipfile.ZipFile(little) as src, zipfile.ZipFile(HERE / "torch_layouts_big.pt", "w") as dst:
    for info in src.infolist():
      data = src.read(info)
      if info.filename.endswith("/byteorder"):
        data = b"big"
      elif "/data/" in info.filename:
        dtype = dtypes[info.filename.rsplit("/", 1)[1]][1]
        size = torch.empty((), dtype=dtype).element_size()
        if size > 1:
          data = np.frombuffer(data, f"<u{size}").astype(f">u{size}").tobytes()
      dst.writestr(info.filename, data)
  for p in (little, HERE / "torch_layouts_big.pt", HERE / "torch_layouts.npz"):
    print(p.name, p.stat().st_size, "bytes")


if __name__ == "__main__":
  main()
