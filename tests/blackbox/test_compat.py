#!/usr/bin/python3
# SPDX-License-Identifier: MIT
import sys
print("not written yet")
sys.exit(1)
