// The two Vue calls vue.js makes: the component is its options, a vnode is what h() was given.
export const defineComponent = (options) => options;
export const h = (type, props, children) => ({ type, props, children });
