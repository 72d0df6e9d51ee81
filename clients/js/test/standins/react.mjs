// The few React calls react.js makes, recorded: one render, its effects run by the test.
export const effects = [];
export function createElement(type, props, ...children) {
  return { type, props: { ...props, children } };
}
export function useRef(current) {
  return { current };
}
export function useEffect(effect) {
  effects.push(effect);
}
export const useLayoutEffect = useEffect;
