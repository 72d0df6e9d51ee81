// Module hooks for wrappers.test.mjs: "react" and "vue" resolve to the minimal stand-ins beside
// this file, so the wrappers are tested without either framework installed.
const STANDINS = {
  react: new URL("./react.mjs", import.meta.url).href,
  vue: new URL("./vue.mjs", import.meta.url).href,
};

export async function resolve(specifier, context, next) {
  if (Object.hasOwn(STANDINS, specifier)) return { url: STANDINS[specifier], shortCircuit: true };
  return next(specifier, context);
}
