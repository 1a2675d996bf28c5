"""The embedded backbones must really be ImageNet-trained: they name real photos correctly."""

import pytest
import torch
from PIL import Image

from headstart.backbones import get_backbone

skimage_data = pytest.importorskip("skimage.data")

# Chelsea is a tabby; ImageNet's five domestic-cat classes (281-285) are all right answers.
DOMESTIC_CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
PHOTOS = {"chelsea": DOMESTIC_CATS, "coffee": {"espresso"}}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_top1_on_real_photos(name):
    spec = get_backbone(name)
    model = spec.build()
    transform = spec.preprocessing.transform()
    batch = torch.stack([transform(Image.fromarray(getattr(skimage_data, photo)())) for photo in PHOTOS])
    with torch.inference_mode():
        probabilities = model(batch).softmax(1)
    for (photo, expected), row in zip(PHOTOS.items(), probabilities):
        top1 = spec.categories[int(row.argmax())]
        assert top1 in expected, f"{name} called {photo} a {top1!r}"
        assert float(row.max()) > 0.3  # confident, as a trained network is; random weights give ~0.001
