"""A kept run's answers: which validation images it got wrong, in which order, and its confusion matrix."""

import numpy as np
import pytest
import torch

from tlcore.finetune.engine import confusion
from tlcore.finetune.predict import Answers


def answers(truth, said, confidence) -> Answers:
    return Answers(indices=np.arange(10, 10 + len(truth)), truth=np.array(truth), said=np.array(said),
                   confidence=np.array(confidence))


def test_mistakes_are_the_wrong_answers_the_surest_first():
    found = answers([0, 1, 1, 0, 2], [0, 0, 1, 1, 0], [0.9, 0.8, 0.7, 0.95, 0.6])
    assert found.mistakes().tolist() == [3, 1, 4]  # positions: 0.95, then 0.8, then 0.6
    assert found.indices[found.mistakes()].tolist() == [13, 11, 14]  # the dataset's own indices
    assert found.accuracy() == pytest.approx(2 / 5)
    assert found.confusion(3).tolist() == [[1, 1, 0], [1, 1, 0], [1, 0, 0]]  # rows: true, columns: said


def test_the_lab_and_a_trial_count_the_confusion_with_one_function():
    truth, said = torch.tensor([2, 2, 0]), torch.tensor([2, 1, 0])
    assert confusion(truth, said, 3).tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    assert answers([2, 2, 0], [2, 1, 0], [1, 1, 1]).confusion(3).tolist() == confusion(truth, said, 3).tolist()
    empty = answers([], [], [])
    assert empty.mistakes().tolist() == [] and np.isnan(empty.accuracy()) and empty.confusion(2).sum() == 0


def test_evaluation_prepares_and_runs_its_batches_without_gradients():
    """evaluate is the trial's per-epoch validation: no autograd graph, the batch's preparation included."""
    from torch import nn

    from tlcore.finetune import TrialConfig
    from tlcore.finetune.engine import Loop, evaluate

    seen = []

    def prepare(batch: torch.Tensor, train: bool) -> torch.Tensor:
        seen.append(torch.is_grad_enabled())
        return torch.randn(len(batch), 4)

    loop = Loop(nn.Linear(4, 3), torch.tensor([0, 1, 2, 0]), prepare,
                TrialConfig(model="efficientnet_lite0", batch_size=2), torch.device("cpu"))
    _, _, preds = evaluate(loop, torch.arange(4))
    assert seen == [False, False] and preds.shape == (4,)
