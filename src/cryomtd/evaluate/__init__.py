"""Evaluation of 3-D estimates: alignment over O(3), Fourier shell correlation, resolution,
metrics files and figures (user guide: docs/evaluation.md; design: docs/design.md §11).

* :func:`fsc`, :func:`resolution` (``cryomtd.evaluate.fsc``)
* :func:`align` → :class:`Alignment` (``cryomtd.evaluate.align``)
* :func:`evaluate_experiment`, :func:`write_summary` (``cryomtd.evaluate.metrics``)
* figures (``cryomtd.evaluate.figures``), and :func:`write_evaluation` tying them to files.
"""

from cryomtd.evaluate.align import Alignment, align, align_coefficients, relative_error, transform_volume
from cryomtd.evaluate.fsc import crossing_shell, fsc, resolution, shell_frequencies
from cryomtd.evaluate.metrics import (EvaluationSettings, evaluate_experiment, gamma_from_micrographs,
                                      summary_rows, write_summary)
from cryomtd.evaluate.outputs import write_evaluation

__all__ = ["Alignment", "align", "align_coefficients", "relative_error", "transform_volume", "crossing_shell",
           "fsc", "resolution", "shell_frequencies", "EvaluationSettings", "evaluate_experiment",
           "gamma_from_micrographs", "summary_rows", "write_summary", "write_evaluation"]
