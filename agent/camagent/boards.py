"""Board profiles: pin map and mechanics of each supported camera.

Pins are Linux sysfs GPIO numbers (SoC pad index, one gpiochip at base 0).
Stepper figures are in half-steps. No measured travel figures are published for
this camera: the ranges below assume the usual geared micro stepper (about 4096
half-steps per output turn) and about 355 degrees of pan and 90 of tilt. Home the
camera, check the limits against its hard stops, and set your own in the config's
"overrides" section.
"""

_PINS = {
    "pan": (14, 15, 16, 17),      # FUART_RX/TX/CTS/RTS
    "tilt": (31, 36, 37, 38),     # SR_IO09/14/15/16
    "ir_led": 44,                 # SPI0_CZ, 850 nm illuminator
    "sd_reset": 45,               # SPI0_CK, card reader: high then low or it stays dead
    "wifi_power": 46,             # SPI0_DI, USB wifi module power
    "led_green": 61,              # PM_IRIN
    "led_red": 79,                # SAR_GPIO1
    "ircut_open": 76,             # PM_LED0, "open" coil: filter out (night)
    "ircut_close": 77,            # PM_LED1, "close" coil: filter in (day)
}

# speeds in half-steps/s, accel in half-steps/s^2
_PAN = {"min_steps": 0, "max_steps": 4040, "steps_per_degree": 11.378, "park": 2020,
        "speed": 600, "max_speed": 1000, "start_speed": 200, "accel": 2500,
        "home_speed": 500, "home_margin": 256}
_TILT = {"min_steps": 0, "max_steps": 1024, "steps_per_degree": 11.378, "park": 512,
         "speed": 500, "max_speed": 800, "start_speed": 200, "accel": 2000,
         "home_speed": 400, "home_margin": 128}

# the part of a profile a config's "overrides" may change (config checks them against
# these defaults): the same on every board so far
TUNABLE = {"pins": _PINS, "pan": _PAN, "tilt": _TILT,
           "ircut_pulse_ms": 150, "ircut_swap": False, "sd_reset_ms": 100}

BOARDS = {
    "imou-ranger-rc-4mp": {"model": "IMOU Ranger RC (4 MP)", "soc": "SSC337",
                           "openipc_board": "ssc337_lite"},
    "imou-ranger-rc-3mp": {"model": "IMOU Ranger RC (3 MP)", "soc": "SSC332",
                           "openipc_board": "ssc333_lite"},
}


def profile(name, overrides=None):
    """A fresh profile dict for board `name` with `overrides` (already validated) applied."""
    prof = {}
    for key, value in TUNABLE.items():
        prof[key] = dict(value) if isinstance(value, dict) else value
    prof.update(BOARDS[name])
    prof["name"] = name
    if overrides:
        for key, value in overrides.items():
            if isinstance(value, dict):
                prof[key].update(value)
            else:
                prof[key] = value
    return prof
