#!/usr/bin/env bash
# The ros-* wheels export their <pkg>__rosidl_generator_py CMake targets with the include
# directories of the manylinux container they were built in (/opt/python/cp3XX-...). Any
# downstream rosidl_generate_interfaces() then fails at configure time with
#   Imported target "std_msgs::std_msgs__rosidl_generator_py" includes non-existent path
# Point them at this interpreter's Python and numpy headers. Idempotent; re-run after a numpy
# major-version change (numpy 1 and 2 keep their headers in different places).
set -euo pipefail
PY=${1:?usage: fix_ros_wheel_cmake.sh VENV_PYTHON}
PREFIX=$("$PY" -c 'import sys; print(sys.prefix)')
PYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NPINC=$("$PY" -c 'import numpy; print(numpy.get_include())')
# A file is rewritten only when its content changes: a new mtime makes CMake re-check every
# build that imports the target (setup's second run would take twice as long).
n=0
for f in "$PREFIX"/share/*/cmake/export_*__rosidl_generator_pyExport.cmake; do
  [ -e "$f" ] || continue
  fixed=$(sed -E "s#^([[:space:]]*INTERFACE_INCLUDE_DIRECTORIES )\".*\"#\1\"${PYINC};${NPINC}\"#" "$f")
  if [ "$fixed" != "$(cat "$f")" ]; then
    printf '%s\n' "$fixed" >"$f"
    n=$((n + 1))
  fi
done
echo "[setup] fixed $n wheel CMake export files to use $PYINC and $NPINC"
