"""ahead_on_device: every batch arrives, in order, on the device asked for (CUDA's stream path runs
in benchmarks/havic_throughput.py on a GPU machine)."""

import pytest
import torch

from avbench.transfer import ahead_on_device


def test_batches_arrive_in_order_with_their_nones():
    batches = [(torch.full((2, 3), i, dtype=torch.uint8), None if i % 2 else torch.ones(1) * i) for i in range(5)]
    arrived = list(ahead_on_device(iter(batches), "cpu"))
    assert len(arrived) == 5
    for (video, audio), (sent_video, sent_audio) in zip(arrived, batches):
        assert torch.equal(video, sent_video) and video.device.type == "cpu"
        assert (audio is None) == (sent_audio is None)
    assert list(ahead_on_device(iter([]), "cpu")) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_copies_equal_the_host_batches():
    batches = [(torch.randint(0, 255, (4, 16, 16), dtype=torch.uint8), torch.randn(4, 8)) for _ in range(6)]
    for (video, audio), (sent_video, sent_audio) in zip(ahead_on_device(iter(batches), "cuda"), batches):
        assert video.is_cuda and torch.equal(video.cpu(), sent_video) and torch.equal(audio.cpu(), sent_audio)
