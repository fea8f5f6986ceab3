"""Ferry's benchmark: ferry against cp, rsync, rclone and fpsync, side by side."""
