# camagent — top-level entry points. `make help` lists them.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
BUILD := build

# Debian packages the tests and tools run for real.
APT_PACKAGES := python3-venv mosquitto mosquitto-clients flashrom squashfs-tools u-boot-tools \
	shellcheck inotify-tools openssl xz-utils busybox ffmpeg libubootenv-tool \
	python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav iproute2
# Commands those packages provide, used to decide whether apt-get is needed (mosquitto and
# flashrom are in /usr/sbin, which is not on a normal user's PATH).
APT_COMMANDS := mosquitto mosquitto_pub flashrom mksquashfs unsquashfs mkimage \
	shellcheck inotifywait openssl xz busybox ffmpeg ffprobe fw_printenv ss
# Only `make bench` needs these: the cross gcc and qemu-user build and run the 32-bit ARM
# interpreter of the footprint rows (skipped, with the reason, without them).
BENCH_APT_PACKAGES := gcc-arm-linux-gnueabihf qemu-user
BENCH_APT_COMMANDS := arm-linux-gnueabihf-gcc qemu-arm
# Python modules from Debian (the RTSP server runs under /usr/bin/python3 for its gi).
APT_PYMODULES := venv gi

# umqtt.simple 1.3.4 = what MicroPython 1.22 ships. Its sdist has no setup.py, so
# pip fails on it, but `pip download --no-clean` has unpacked it by then: whether
# simple.py is there, not pip's exit status, says if the download worked.
UMQTT_VERSION := 1.3.4
UMQTT := $(BUILD)/vendor/umqtt/simple.py

BOARD ?= imou-ranger-rc-4mp
OPENIPC ?= $(HOME)/openipc-firmware
# Empty: camhost uses the board's release, openipc.SOC-nor-lite.tgz, in this directory.
FIRMWARE ?=
MICROPYTHON ?=
BACKUP ?=
PORT ?= /dev/ttyUSB0
# First boot without SSH (docs/first-boot.md): wifi into the backup's U-Boot environment,
# the broker into /etc/camagent.json. Passwords only as files.
WIFI_MODULES ?=
WIFI_SSID ?=
WIFI_PASSWORD_FILE ?=
MQTT_HOST ?=
MQTT_USER ?=
MQTT_PASSWORD_FILE ?=
DEVICE_ID ?=
FIRST_BOOT = $(if $(WIFI_SSID),--wifi-ssid '$(WIFI_SSID)') \
	$(if $(WIFI_PASSWORD_FILE),--wifi-password-file $(WIFI_PASSWORD_FILE)) \
	$(if $(MQTT_HOST),--mqtt-host $(MQTT_HOST)) $(if $(MQTT_USER),--mqtt-user '$(MQTT_USER)') \
	$(if $(MQTT_PASSWORD_FILE),--mqtt-password-file $(MQTT_PASSWORD_FILE)) \
	$(if $(DEVICE_ID),--device-id $(DEVICE_ID))
# What `make image` and `make repack` write and `make flash` writes to the camera.
IMAGE ?= $(BUILD)/camagent-$(BOARD).bin

.PHONY: help demo test bench bench-deps docs deps venv mpy image repack backup flash flash-uboot clean

help:
	@echo "make demo         simulated camera on a private mosquitto, driven over MQTT"
	@echo "                  (ARGS=\"--keep-running\" etc.: .venv/bin/camhost demo --help)"
	@echo "make test         install what is missing, run the test suite"
	@echo "make bench        speed and footprint benchmarks (bench/results.json)"
	@echo "make docs         regenerate the figures in docs/ from the code"
	@echo "make deps         install the Debian packages the tests and tools need"
	@echo "make venv         create .venv with camhost (.venv/bin/camhost) and the test tools"
	@echo "make clean        remove build/ and caches"
	@echo "make mpy          compile the agent to .mpy (build/mpy)"
	@echo "make image        build an OpenIPC image with camagent (OPENIPC=dir BOARD=...;"
	@echo "                  the agent frozen into MicroPython, FROZEN=0 for .mpy files)"
	@echo "make repack       add camagent to an OpenIPC release (FIRMWARE=... MICROPYTHON=..."
	@echo "                  WIFI_MODULES=dir BACKUP=... WIFI_SSID=... MQTT_HOST=...: docs/first-boot.md)"
	@echo "make backup       read the camera's flash twice into backups/ (flashrom)"
	@echo "make flash        write IMAGE=... after a verified backup (flashrom)"
	@echo "make flash-uboot  write IMAGE=... through the stock U-Boot (PORT=... SERVER_IP=... CAMERA_IP=...)"

deps:
	@missing=""; for c in $(APT_COMMANDS); do command -v $$c >/dev/null 2>&1 || [ -x /usr/sbin/$$c ] || missing="$$missing $$c"; done; \
	for m in $(APT_PYMODULES); do /usr/bin/python3 -c "import $$m" 2>/dev/null || missing="$$missing python3-$$m"; done; \
	ls /usr/lib/*/girepository-1.0/GstRtspServer-1.0.typelib >/dev/null 2>&1 || missing="$$missing gst-rtsp-server"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages (missing:$$missing)"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

# Quiet apart from progress: pip's output goes to build/venv.log, shown when it fails.
$(VENV)/.stamp: hostside/pyproject.toml requirements-dev.txt
	@echo "setting up .venv (camhost and the test tools; log: $(BUILD)/venv.log)"
	@mkdir -p $(BUILD)
	@{ $(PYTHON) -m venv $(VENV) && $(PIP) install -q --upgrade pip && \
	   $(PIP) install -q -r requirements-dev.txt -e hostside; } >$(BUILD)/venv.log 2>&1 || \
	 { tail -n 20 $(BUILD)/venv.log >&2; echo "setting up .venv failed (python3-venv missing? run make deps)" >&2; exit 1; }
	@touch $@

$(UMQTT): | $(VENV)/.stamp
	@echo "fetching umqtt.simple $(UMQTT_VERSION) (what MicroPython 1.22 ships)"
	@rm -rf $(BUILD)/pipdl && mkdir -p $(BUILD)/pipdl $(dir $@)
	@TMPDIR=$(abspath $(BUILD))/pipdl $(PIP) download --no-deps --no-binary :all: \
		--no-clean -d $(BUILD)/pipdl/dl micropython-umqtt-simple==$(UMQTT_VERSION) \
		>$(BUILD)/pipdl/log 2>&1 || true
	@src=$$(ls $(BUILD)/pipdl/pip-download-*/*/umqtt/simple.py 2>/dev/null); \
	if [ ! -f "$$src" ]; then \
		echo "cannot download micropython-umqtt.simple==$(UMQTT_VERSION) from PyPI:" >&2; \
		grep -v "does not appear to be a Python project" $(BUILD)/pipdl/log | tail -n 5 >&2; \
		exit 1; \
	fi; \
	cp "$$src" $@
	@touch $(dir $@)__init__.py
	@rm -rf $(BUILD)/pipdl

venv: $(VENV)/.stamp $(UMQTT)

# 4 workers on 2 cores: most tests wait on real brokers, agents and tools rather than
# compute. --dist loadfile keeps each file in one worker, in order (a file's last test
# may check what its others did).
test: deps venv
	$(PY) -m pytest -q -n 4 --dist loadfile tests

demo: deps venv
	@$(PY) -m camhost demo $(ARGS)

docs: deps venv
	$(PY) -m camhost.docfigures --write

bench: deps bench-deps venv
	$(PY) bench/run.py

bench-deps:
	@missing=""; for c in $(BENCH_APT_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing the bench's Debian packages (missing:$$missing)"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(BENCH_APT_PACKAGES) >/dev/null; \
	fi

mpy: venv
	$(PY) -m camhost image mpy --out $(BUILD)/mpy

image: venv
	$(PY) -m camhost image build --board $(BOARD) --openipc $(OPENIPC) --out $(IMAGE) \
		$(if $(BACKUP),--backup $(BACKUP)) $(FIRST_BOOT) $(if $(ONVIF),--onvif) \
		$(if $(filter 0,$(FROZEN)),--no-frozen)

repack: venv
	@[ -n "$(MICROPYTHON)" ] || { echo "make repack needs MICROPYTHON=path/to/the/camera's/micropython (an ARM binary)"; exit 2; }
	$(PY) -m camhost image repack --board $(BOARD) --micropython $(MICROPYTHON) \
		--out $(IMAGE) $(if $(FIRMWARE),--firmware $(FIRMWARE)) $(if $(BACKUP),--backup $(BACKUP)) \
		$(if $(WIFI_MODULES),--wifi-modules $(WIFI_MODULES)) $(if $(NO_WIFI),--no-wifi) $(FIRST_BOOT)

backup: venv
	$(PY) -m camhost backup

flash: venv
	$(PY) -m camhost flash $(IMAGE)

flash-uboot: venv
	@[ -n "$(SERVER_IP)" ] && [ -n "$(CAMERA_IP)" ] || { echo "make flash-uboot needs SERVER_IP=this computer's address and CAMERA_IP=a free address for the camera, on the camera's Ethernet"; exit 2; }
	$(PY) -m camhost flash-uboot $(IMAGE) --port $(PORT) --server-ip $(SERVER_IP) --camera-ip $(CAMERA_IP)

clean:
	rm -rf $(BUILD) .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
