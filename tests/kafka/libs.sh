#!/usr/bin/env bash
# Prints the directory of the Kafka broker's jars (copied there by `.ci/setup`, see pom.xml).
here="$(cd "$(dirname "$0")" && pwd)"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
echo "${KEYFLOW_CACHE:-$HOME/.cache/keyflow}/kafka-$version/libs"
