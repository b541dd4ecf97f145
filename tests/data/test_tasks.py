"""The one Task of the studies and the demo: shapes, splits and accuracy."""

import pytest
import torch

from ntkit.data.tasks import GRID_SIZE, Task, digit_value_task, interactive_task, load_task


def test_regimes_tasks_have_disjoint_digit_splits():
    task = load_task("digits")
    assert task.x_train.shape == (500, 64) and task.y_train.shape == (500, 10) and task.classes == 10
    assert task.x_train.shape[0] + task.x_test.shape[0] == 1797


def test_digit_value_task_images_and_pixels_are_the_same_data():
    images, pixels = digit_value_task(images=True), digit_value_task(images=False)
    assert images.x_train.shape == (64, 1, 8, 8) and pixels.x_train.shape == (64, 64) and pixels.x_test.shape[0] == 128
    assert torch.equal(images.x_train.flatten(1), pixels.x_train)
    assert float(pixels.y_train.min()) >= -1 and float(pixels.y_train.max()) <= 1


def test_interactive_tasks_carry_what_the_page_draws():
    sin = interactive_task("sin")
    assert sin.x_plot is sin.x_test and sin.dims == 1 and sin.x_slice.shape[0] == sin.slice_coord.shape[0]
    spirals = interactive_task("spirals", seed=3)
    assert spirals.x_plot.shape == (GRID_SIZE**2, 2) and spirals.x_train.shape == (64, 2) and spirals.dims == 2
    with pytest.raises(ValueError, match=r"task must be one of \('sin', 'spirals', 'circles'\); got 'moons'"):
        interactive_task("moons")


def test_accuracy_by_sign_and_by_argmax():
    y = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    task = Task("t", y, y, y, y, classes=2)
    assert task.accuracy(torch.tensor([[0.3], [-2.0], [-0.1], [-1.0]]), y) == 0.75
    onehot = torch.eye(3)
    assert task.accuracy(torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.1], [0.5, 0.0, 0.1]]), onehot) == pytest.approx(
        2 / 3
    )
