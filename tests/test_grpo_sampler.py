"""The stochastic DDIM policy (atelier.tools.ddim_logprob, atelier.tools.policy_sampler) and the
policy-gradient pieces (atelier.tools.policy_gradient): log-probabilities against a direct
Gaussian computation in float64, for epsilon and v-prediction; trajectories regenerated from
their seeds; recorded log-probabilities re-scored; GRPO advantages."""

import math

import numpy as np
import pytest
import torch

from atelier.tools.ddim_logprob import ddim_step_with_logprob
from atelier.tools.policy_gradient import clipped_policy_loss, gaussian_step_kl, group_advantages
from atelier.tools.policy_sampler import PolicySampler


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_step_log_prob_is_the_ddim_gaussian_float64(prediction_type, eta):
    """x_t built from a known x0 and eps; the model output that predicts them exactly; the step's
    log-probability equals torch.distributions.Normal's at DDIM's mean and sigma, written out here."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64), torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    a_t, a_prev = 0.3, 0.6
    x_t = math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * eps
    output = eps if prediction_type == "epsilon" else math.sqrt(a_t) * eps - math.sqrt(1 - a_t) * x0
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    mean = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)

    step = ddim_step_with_logprob(output, x_t, a_t, a_prev, eta, prediction_type, noise=noise)

    expected = torch.distributions.Normal(mean, sigma).log_prob(mean + sigma * noise).sum(dim=(1, 2, 3))
    assert step.prev_sample.dtype == torch.float64
    torch.testing.assert_close(step.prev_sample, mean + sigma * noise, rtol=0, atol=1e-12)
    torch.testing.assert_close(step.log_prob, expected, rtol=1e-12, atol=1e-9)
    # Scoring the drawn sample again gives the same number (what the update does with grad).
    again = ddim_step_with_logprob(output, x_t, a_t, a_prev, eta, prediction_type, prev_sample=step.prev_sample)
    torch.testing.assert_close(again.log_prob, step.log_prob, rtol=0, atol=0)


def test_a_step_without_noise_has_no_log_prob():
    x = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="no log-probability"):
        ddim_step_with_logprob(x, x, 0.5, 1.0, 1.0, "epsilon", noise=x)
    with pytest.raises(ValueError, match="exactly one"):
        ddim_step_with_logprob(x, x, 0.5, 0.7, 1.0, "epsilon")
    with pytest.raises(ValueError, match="prediction_type"):
        ddim_step_with_logprob(x, x, 0.5, 0.7, 1.0, "sample", noise=x)


@pytest.fixture(scope="module")
def shapes_pipe():
    from atelier.worlds.shapes.model import load_generator

    return load_generator("shapes")


@pytest.fixture(scope="module")
def sd15_pipe(tiny_sd15):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd15), safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _check_sampler(pipe, prompts, prediction_type):
    sampler = PolicySampler(pipe, steps=4, guidance=3.0, eta=1.0, batch_size=4)
    assert sampler.prediction_type == prediction_type
    seeds = [11, 12, 13]
    first, second = sampler.sample(prompts, seeds), sampler.sample(prompts, seeds)
    # Regenerated from the seeds: the same trajectory, bit for bit.
    assert torch.equal(first.latents, second.latents)
    assert torch.equal(torch.nan_to_num(first.log_probs), torch.nan_to_num(second.log_probs))
    # Another seed, another trajectory.
    other = sampler.sample(prompts, [11, 12, 14])
    assert torch.equal(other.latents[:, :2], first.latents[:, :2]) and not torch.equal(other.latents[:, 2], first.latents[:, 2])
    # Every noisy step re-scored from its recorded transition gives the recorded log-probability.
    cond, uncond = sampler.conditioning(prompts)
    noisy = [i for i in range(4) if sampler.has_noise(i)]
    assert noisy and all(torch.isnan(first.log_probs[i]).all() for i in range(4) if i not in noisy)
    with torch.no_grad():
        for i in noisy:
            out = sampler.guided_output(first.latents[i], i, cond, uncond)
            step = sampler.step(out, first.latents[i], i, prev_sample=first.latents[i + 1])
            torch.testing.assert_close(step.log_prob, first.log_probs[i], rtol=1e-5, atol=1e-3)
    images = sampler.decode(first.latents[-1])
    assert len(images) == 3 and images[0].mode == "RGB"
    return sampler, first


def test_shapes_policy_v_prediction(shapes_pipe):
    sampler, traj = _check_sampler(shapes_pipe, ["a red circle"] * 3, "v_prediction")
    assert traj.latents.shape == (5, 3, 3, 32, 32)
    # Starting noise as the shapes pipeline draws it: its own sampler starts from the same x_T.
    assert torch.equal(traj.latents[0, 0], torch.randn((3, 32, 32), generator=torch.Generator().manual_seed(11)))
    assert sampler.timesteps == [999, 749, 499, 249]  # the model's trailing spacing


def test_sd15_policy_epsilon(sd15_pipe):
    _, traj = _check_sampler(sd15_pipe, ["a photo of a cat"] * 3, "epsilon")
    assert traj.latents.shape[2] == 4  # VAE latents


def test_gate_and_reference_disable_the_lora(shapes_pipe):
    from atelier.tools.lora import add_lora, restored_after_training

    with restored_after_training(shapes_pipe):
        params = add_lora(shapes_pipe.unet, 2)
        with torch.no_grad():
            for p in params:
                p.add_(0.3)
        sampler = PolicySampler(shapes_pipe, steps=4, guidance=3.0, eta=1.0, lora_min_timestep=600)
        cond, uncond = sampler.conditioning(["a red circle"])
        x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            on, ref = sampler.guided_output(x, 0, cond, uncond), sampler.reference_output(x, 0, cond, uncond)
            gated, ref_late = sampler.guided_output(x, 2, cond, uncond), sampler.reference_output(x, 2, cond, uncond)
        assert not torch.equal(on, ref)  # step 0 (t=999): the adapter acts
        assert torch.equal(gated, ref_late)  # step 2 (t=499 < 600): the base alone


def test_group_advantages():
    rewards = [1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, None, 1.0, 1.0]
    groups = ["a", "a", "a", "a", "b", "b", "b", "c", "c", "c"]
    adv, flat = group_advantages(rewards, groups)
    np.testing.assert_allclose(adv[:4], [1, -1, 1, -1])
    assert (adv[4:] == 0).all()  # group b has zero variance; c has one reward missing and the rest equal
    assert flat == pytest.approx(2 / 3)
    clipped, _ = group_advantages([1.0, 0.0, 0.0, 0.0, 0.0], ["a"] * 5, clip=1.5)
    assert clipped[0] == 1.5 and clipped[1:].max() < 0
    with pytest.raises(ValueError):
        group_advantages([1.0], ["a", "b"])


def test_clipped_loss_and_kl():
    adv = torch.tensor([1.0, -1.0])
    old = torch.tensor([0.0, 0.0])
    # Per-dimension ratio exp(0.5) for both, beyond a clip of 0.2: the positive advantage is clipped.
    loss, clipfrac = clipped_policy_loss(torch.tensor([5.0, 5.0]), old, adv, 0.2, dims=10)
    r = math.exp(0.5)
    assert loss.item() == pytest.approx((-1.2 + r) / 2)
    assert clipfrac.item() == 1.0
    std = torch.tensor(0.5)
    kl = gaussian_step_kl(torch.ones(2, 3), torch.zeros(2, 3), std)
    torch.testing.assert_close(kl, torch.full((2,), 1 / (2 * 0.25)))
