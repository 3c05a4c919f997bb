// The repo's import structure, checked in CI (`make deps-check`): no cycles, and the layering described in
// docs/architecture.md. A new import that breaks a rule fails the check with the rule's name and the path.
const T = "^trainer/src/";
/** Tests and test helpers may import across layers (they assemble real trainers to test a model). */
const TESTS = "\\.test\\.ts$|/testing\\.ts$";
module.exports = {
  forbidden: [
    { name: "no-circular", severity: "error", comment: "Import cycles (type-only imports included).", from: {}, to: { circular: true } },
    {
      name: "models-below-training",
      severity: "error",
      comment: "Models, layers and losses never import the training loop, the commands or the jobs built on them.",
      from: { path: `${T}(tokenizer|ar|nn|losses)/`, pathNot: TESTS },
      to: { path: `${T}(train|commands|sample)/|${T}cli\\.ts$` },
    },
    {
      name: "tokenizer-and-ar-apart",
      severity: "error",
      comment: "The two models share layers through nn/, never each other's modules.",
      from: { path: `${T}(tokenizer|ar)/`, pathNot: TESTS },
      to: { path: `${T}(tokenizer|ar)/`, pathNot: `${T}$1/` },
    },
    {
      name: "nn-is-a-leaf",
      severity: "error",
      comment: "nn/ (parameter store, layers, kernels) depends on tfjs and util/ only.",
      from: { path: `${T}nn/`, pathNot: TESTS },
      to: { path: `${T}`, pathNot: `${T}(nn|util)/` },
    },
    {
      name: "foundations-stay-low",
      severity: "error",
      comment: "io/, util/, dist/ and data/ sit below every model, loss, trainer and command.",
      from: { path: `${T}(io|util|dist|data)/`, pathNot: TESTS },
      to: { path: `${T}(tokenizer|ar|nn|losses|train|commands|sample|eval)/|${T}cli\\.ts$` },
    },
    {
      name: "commands-on-top",
      severity: "error",
      comment: "Only the entry point imports commands/.",
      from: { path: `${T}`, pathNot: `${T}(commands/|cli\\.ts$)|${TESTS}` },
      to: { path: `${T}commands/` },
    },
    {
      name: "operator-without-trainer",
      severity: "error",
      comment: "The operator and the shared contract never load trainer code (tfjs, sharp, ORT).",
      from: { path: "^(operator|common)/src/" },
      to: { path: "^trainer/" },
    },
    {
      name: "common-is-shared",
      severity: "error",
      comment: "common/ is imported by both sides and imports neither.",
      from: { path: "^common/src/" },
      to: { path: "^(operator|trainer)/" },
    },
  ],
  options: {
    tsPreCompilationDeps: true,
    doNotFollow: { path: "node_modules" },
    exclude: { path: "node_modules|^dist/" },
  },
};
