// The API group and version of every MergeVQ kind: the one place they are spelled. Kind names, plurals,
// singulars and short names live in each kind's CRD definition (tokenizerTrainingCrd, arTrainingCrd,
// samplingJobCrd; see index.ts for the by-kind lookup), which generate.ts also renders into crds/*.yaml.
export const GROUP = "mergevq.ai";
export const VERSION = "v1alpha1";
/** `apiVersion` of every MergeVQ object and of the owner references on its children. */
export const API_VERSION = `${GROUP}/${VERSION}` as const;
