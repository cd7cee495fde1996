#!/bin/sh
# qemu-guest-agent's guest-shutdown runs `shutdown -P|-r|-H +0 ...`. There is no init system here:
# reboot at once; aetherd runs QEMU with -no-reboot, so a guest reboot ends the VM.
sync
exec reboot -f
