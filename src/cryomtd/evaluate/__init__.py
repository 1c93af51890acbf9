"""Evaluation of 3-D estimates: alignment over O(3), Fourier shell correlation, resolution,
metrics files and figures (user guide in docs/evaluation.md).

* :func:`fsc`, :func:`resolution` (``cryomtd.evaluate.fsc``)
* :func:`align` → :class:`Alignment` (``cryomtd.evaluate.align``)
* :class:`EvaluationSettings` (``cryomtd.evaluate.settings``: the ``evaluate`` config block)
* :func:`evaluate_experiment` → :class:`Evaluation`, :func:`write_summary` (``cryomtd.evaluate.metrics``):
  simulated experiments against the truth; data experiments against a reference map
  (:func:`match_reference`, ``cryomtd.evaluate.reference``) and/or by the half-map FSC of
  half-data estimates (:func:`half_map_metrics`)
* figures (``cryomtd.evaluate.figures``), and :func:`write_evaluation` tying them to files.
"""

from cryomtd.evaluate.align import (
    Alignment,
    align,
    align_coefficients,
    relative_error,
    transform_volume,
)
from cryomtd.evaluate.fsc import crossing_shell, fsc, resolution, shell_frequencies
from cryomtd.evaluate.metrics import (
    Evaluation,
    Truth,
    evaluate_experiment,
    fsc_full_from_half,
    gamma_from_micrographs,
    half_map_metrics,
    load_truth,
    measure_estimate,
    read_estimate,
    summary_rows,
    true_gamma,
    write_summary,
)
from cryomtd.evaluate.outputs import write_evaluation
from cryomtd.evaluate.reference import match_reference
from cryomtd.evaluate.settings import EvaluationAdvanced, EvaluationSettings

__all__ = [
    "Alignment",
    "Evaluation",
    "EvaluationAdvanced",
    "EvaluationSettings",
    "Truth",
    "align",
    "align_coefficients",
    "crossing_shell",
    "evaluate_experiment",
    "fsc",
    "fsc_full_from_half",
    "gamma_from_micrographs",
    "half_map_metrics",
    "load_truth",
    "match_reference",
    "measure_estimate",
    "read_estimate",
    "relative_error",
    "resolution",
    "shell_frequencies",
    "summary_rows",
    "transform_volume",
    "true_gamma",
    "write_evaluation",
    "write_summary",
]
