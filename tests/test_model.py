"""The CRNN presets, the per-sample CTC loss and CTC decoding."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REAL_DEV_VARIABLE, REAL_SAMPLE
from supersmm_tasks.model import (PRESETS, FusedBatchNormalization, ProjectedLSTM, beam_decode, build_model, ctc_loss,
                                  greedy_decode, logit_lengths)
from supersmm_tasks.pipeline import load_image
from supersmm_tasks.recognizer import serving_function
from supersmm_tasks.vocabulary import load_vocabulary

REAL_PNG = str(REAL_SAMPLE / f"{REAL_SAMPLE.name}.png") if REAL_SAMPLE else None

SEMANTIC = len(load_vocabulary("semantic"))


def real_image(height: int, width: int = 256) -> tf.Tensor:
    """The start of the real PrIMuS incipit as a batch of one (narrow, so eager calls stay fast)."""
    if REAL_PNG is None:
        pytest.skip(f"{REAL_DEV_VARIABLE} is unset: this test reads a real PrIMuS image")
    return tf.constant(load_image(REAL_PNG, height)[np.newaxis, :, :width])


def layers_of(model, kind):
    return [layer for layer in model._flatten_layers() if type(layer) is kind]


def test_paper_model_is_the_published_architecture():
    model = build_model(PRESETS["paper"], SEMANTIC, seed=0)
    image = real_image(128)

    logits = model(image, training=False)

    assert [c.filters for c in layers_of(model, keras.layers.Conv2D)] == [32, 64, 128, 256]
    assert all(c.kernel_size == (3, 3) for c in layers_of(model, keras.layers.Conv2D))
    assert len(layers_of(model, FusedBatchNormalization)) == 4
    assert [a.negative_slope for a in layers_of(model, keras.layers.LeakyReLU)] == [0.2] * 4
    assert [p.pool_size for p in layers_of(model, keras.layers.MaxPooling2D)] == [(2, 2)] * 4
    lstms = layers_of(model, ProjectedLSTM)
    assert len(lstms) == 4 and all(lstm.units == 512 for lstm in lstms)  # 2 layers x 2 directions
    assert [d.rate for d in layers_of(model, keras.layers.Dropout)] == [0.5, 0.5]
    assert not layers_of(model, keras.layers.Add)  # stacked, as published
    assert logits.shape == (1, image.shape[2] // 16, SEMANTIC + 1)


def test_lstms_keep_the_settings_that_let_keras_use_cudnn():
    for preset in PRESETS.values():
        lstms = layers_of(build_model(preset, SEMANTIC, seed=0), ProjectedLSTM)
        assert lstms
        for lstm in lstms:
            config = lstm.get_config()
            assert config["activation"] == "tanh" and config["recurrent_activation"] == "sigmoid"
            assert config["recurrent_dropout"] == 0 and config["dropout"] == 0
            assert not config["unroll"] and config["use_bias"]


@pytest.mark.parametrize("wrap", [
    lambda lstm: lstm,
    lambda lstm: type(lstm).from_config({**lstm.get_config(), "go_backwards": True}),
    keras.layers.Bidirectional,
], ids=["forward", "go_backwards", "bidirectional"])
def test_projected_lstm_computes_what_keras_lstm_does(wrap):
    sequences = tf.random.stateless_normal([3, 11, 6], seed=[1, 2])
    keras_lstm = wrap(keras.layers.LSTM(5, return_sequences=True))
    projected = wrap(ProjectedLSTM(5, return_sequences=True))
    keras_lstm(sequences), projected(sequences)
    assert [(v.name, v.shape) for v in projected.weights] == [(v.name, v.shape) for v in keras_lstm.weights]
    projected.set_weights([np.random.default_rng(i).normal(size=v.shape) for i, v in enumerate(keras_lstm.weights)])
    keras_lstm.set_weights(projected.get_weights())

    results = []
    for layer in (keras_lstm, projected):
        with tf.GradientTape() as tape:
            tape.watch(sequences)
            outputs = layer(sequences, training=True)
            loss = tf.reduce_sum(outputs * tf.range(outputs.shape[-1], dtype=tf.float32))
        results.append([outputs, *tape.gradient(loss, [sequences, *layer.trainable_weights])])

    for expected, actual in zip(*results, strict=True):  # float32 round-off, relative to each array's scale
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_fused_batch_norm_computes_what_keras_batch_norm_does(training):
    images = tf.random.stateless_normal([4, 8, 10, 6], seed=[1, 2]) * 3.0 + 1.0
    keras_norm = keras.layers.BatchNormalization(momentum=0.9)
    fused = FusedBatchNormalization(momentum=0.9)
    keras_norm.build(images.shape), fused.build(images.shape)
    assert [(v.name, v.shape) for v in fused.weights] == [(v.name, v.shape) for v in keras_norm.weights]
    rng = np.random.default_rng(0)
    gamma, beta, mean, variance = (rng.normal(size=6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, 6))
    for layer in (keras_norm, fused):
        layer.set_weights([gamma, beta, mean, variance])

    results = []
    for layer in (keras_norm, fused):
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images, training=training)
            loss = tf.reduce_sum(outputs * tf.sin(outputs))
        results.append([outputs, *tape.gradient(loss, [images, *layer.trainable_weights]),
                        *layer.non_trainable_weights])  # the moving mean and variance after the call

    for expected, actual in zip(*results, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert training == (not np.allclose(fused.moving_mean.numpy(), mean))


def test_a_saved_model_loads_back_and_predicts_the_same(tmp_path):
    model = build_model(PRESETS["tiny"], SEMANTIC, seed=0)
    image = real_image(64)
    model.save(tmp_path / "crnn.keras")

    loaded = keras.models.load_model(tmp_path / "crnn.keras")

    assert len(layers_of(loaded, ProjectedLSTM)) == 4 and len(layers_of(loaded, FusedBatchNormalization)) == 4
    np.testing.assert_array_equal(loaded(image, training=False), model(image, training=False))


def test_tinys_second_recurrent_layer_adds_to_what_the_first_read():
    """With the second layer's weights at zero its LSTMs output zeros, and the frames that reach the token scores
    are the first layer's reading, unchanged: the residual stack starts out as shallow as one layer."""
    model = build_model(PRESETS["tiny"], SEMANTIC, seed=0)
    image = real_image(64)
    second = model.get_layer("bilstm2")
    for weight in second.weights:
        weight.assign(tf.zeros_like(weight))
    reading = keras.Model(model.input, [model.get_layer("dropout1").output, model.get_layer("residual2").output])

    first, both = reading(image, training=False)

    assert float(tf.reduce_max(tf.abs(first))) > 0
    np.testing.assert_array_equal(both, first)


def test_tiny_model_keeps_enough_frames_for_long_labels():
    tiny = PRESETS["tiny"]
    model = build_model(tiny, SEMANTIC, seed=0)
    image = real_image(tiny.height)

    assert model(image).shape[1] == image.shape[2] // tiny.width_reduction
    assert tiny.width_reduction < PRESETS["paper"].width_reduction
    assert model.count_params() < build_model(PRESETS["paper"], SEMANTIC, seed=0).count_params() / 10


def test_the_last_partial_frame_of_an_image_is_read():
    """A staff's closing barline lies in its last few columns: a frame that holds some of them counts, where
    cutting the width down to whole frames lost the closing barline of most real incipits."""
    tiny = PRESETS["tiny"]
    step = tiny.width_reduction
    widths = np.array([8 * step, 8 * step + 1, 9 * step - 1])

    frames = logit_lengths(tf.constant(widths), tiny).numpy()

    assert frames.tolist() == [8, 9, 9]
    assert ((frames - 1) * step < widths).all() and (widths <= frames * step).all()


def test_a_served_model_reads_up_to_the_last_column_of_a_staff():
    tiny = PRESETS["tiny"]
    real_image(tiny.height)  # skips without the real development set
    read_staff = serving_function(build_model(tiny, SEMANTIC, seed=0), tiny)
    width = load_image(REAL_PNG, tiny.height).shape[1]
    assert width % tiny.width_reduction  # the real staff ends inside a frame

    out = read_staff(tf.constant(open(REAL_PNG, "rb").read()))

    frames = int(out["logit_lengths"][0])
    assert out["logits"].shape[1] == frames
    assert (frames - 1) * tiny.width_reduction < width <= frames * tiny.width_reduction


def test_ctc_loss_reads_each_samples_own_lengths():
    rng = np.random.default_rng(0)
    short = rng.normal(size=(6, 5)).astype(np.float32)
    long = rng.normal(size=(10, 5)).astype(np.float32)
    padded = np.stack([np.pad(short, [(0, 4), (0, 0)], constant_values=9.0), long])  # garbage after frame 6
    labels = np.array([[1, 2, -1, -1], [0, 1, 2, 3]], np.int32)

    together = ctc_loss(padded, labels, [2, 4], [6, 10], blank=4).numpy()
    alone = ctc_loss(short[np.newaxis], labels[:1, :2], [2], [6], blank=4).numpy()

    np.testing.assert_allclose(together[0], alone[0], rtol=1e-6)
    assert together[0] != ctc_loss(padded, labels, [2, 4], [10, 10], blank=4).numpy()[0]


def test_greedy_and_beam_decoding_collapse_repeats_and_drop_blanks():
    blank = 3
    frames = [[0, 0, 3, 0, 1, 1, 3, 2, 2, 2], [2, 3, 3, 1, 0, 0, 0, 0, 0, 0]]
    logits = np.log(np.full((2, 10, 4), 0.02, np.float32))
    for row, path in enumerate(frames):
        logits[row, np.arange(10), path] = np.log(0.94)

    expected = [[0, 0, 1, 2], [2, 1]]
    assert greedy_decode(logits, np.array([10, 4]), blank) == expected
    assert beam_decode(logits, np.array([10, 4]), beam_width=8) == expected


def test_batch_norm_learns_in_training_mode_and_only_then():
    model = build_model(PRESETS["tiny"], SEMANTIC, seed=0)
    image = real_image(64)
    moving_mean = model.get_layer("batch_norm1").moving_mean

    model(image, training=False)
    assert np.all(moving_mean.numpy() == 0)

    model(image, training=True)
    assert np.abs(moving_mean.numpy()).max() > 0
