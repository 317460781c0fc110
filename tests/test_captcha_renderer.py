"""The captcha renderer (ocrbench.captcha_renderer); that it needs no core-only package is checked with
every worker-side module in tests/test_worker_imports.py."""


def test_render_is_a_pure_function_of_its_arguments():
    from ocrbench.captcha_renderer import render_captcha

    config = dict(seed=4, charset="ab", min_len=2, max_len=5, width=80, height=32, fonts=[], font_sizes=[24])
    assert render_captcha(config, "train", 3) == render_captcha(config, "train", 3)
    assert render_captcha(config, "train", 3) != render_captcha(config, "train", 4)
