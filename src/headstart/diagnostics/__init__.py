"""After a fit: is the model learning, overfitting or healthy; where it errs; which labels look
wrong; what more data would give; what happened to the weights."""

from .error_analysis import error_analysis
from .probe import label_suspects, learning_curve, out_of_fold_probabilities
from .run import diagnose, model_weight_report
from .verdict import VERDICTS, Evidence, Verdict, judge, wilson_interval
from .weights import layer_stats, randomly_initialised, weight_report

__all__ = [
    "VERDICTS",
    "Evidence",
    "Verdict",
    "diagnose",
    "error_analysis",
    "judge",
    "label_suspects",
    "layer_stats",
    "learning_curve",
    "model_weight_report",
    "out_of_fold_probabilities",
    "randomly_initialised",
    "weight_report",
    "wilson_interval",
]
