"""python -m swarmdemo: see swarmdemo.demo."""

from swarmdemo.demo import main

main()
