#!/usr/bin/env bash
# The DCS-FB CPU recipe with no attention, SA, CSALR and DCS-CSALR: same seed, data and budget; then a
# comparison table. Needs the synthetic small preset in data/synthetic-small (dcsnas data synth).
set -euo pipefail
cfg=experiments/cpu/dcsfb_mbv2_small.yaml
out=${1:-runs/attention_small}
export OMP_WAIT_POLICY=PASSIVE
dcsnas train --config $cfg --out $out/none --no-progress --set "model.attention=[]"
dcsnas train --config $cfg --out $out/sa --no-progress --set "model.attention=[{stage: stage1, name: sa}, {stage: stage2, name: sa}]"
dcsnas train --config $cfg --out $out/csalr --no-progress --set "model.attention=[{stage: stage1, name: csalr, options: {landmarks: 16, groups: 2, qk_ratio: 3}}, {stage: stage2, name: csalr, options: {landmarks: 8, groups: 2, qk_ratio: 4}}]"
dcsnas train --config $cfg --out $out/dcs --no-progress
dcsnas compare $out/none $out/sa $out/csalr $out/dcs --out $out/compare
