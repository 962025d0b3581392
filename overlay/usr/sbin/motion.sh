#!/bin/sh
# majestic runs this on motion (rising edge, at most every 5 s). Its arguments
# are not used: camagent publishes <base>/motion ON, and OFF once motion.quiet_s
# have passed without another call.
case $0 in
	*/*) dir=${0%/*} ;;
	*) dir=. ;;
esac
exec sh "$dir/camagent-local" motion
