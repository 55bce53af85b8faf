"""Speed and memory of the 4DVarNet training step: backends and adjoints side by side, the
public PyTorch 4DVarNet (``ocean4dvarnet`` 1.0.6) as the peer.

* ``python -m benchmarks`` (`benchmarks.runner`): the grid backend x adjoint x K, one
  subprocess per configuration (`benchmarks.worker`), a markdown table + JSON in
  ``benchmarks/results/`` and the targets with PASS/FAIL;
* ``python -m benchmarks.jax_xla_probe``: the JAX step under XLA flag variants;
* ``python -m benchmarks.jax_adjoint_memory`` / ``python -m benchmarks.torch_adjoint_memory``:
  the earlier single-backend 1D checks (sharing `benchmarks._measure`);
* ``benchmarks/amortized_l63.py``: the amortized-posterior benchmark (unchanged).
"""
